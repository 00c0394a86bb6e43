"""WebDataset shards: the tar writer/reader, the sample schema, augmentation and the pair loader."""
