"""Pictures of data: contact sheets of raw images, shards, skeletons and landmarks."""
