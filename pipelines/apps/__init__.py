"""What users run on their own images: pose transfer, portrait editing, keypoints from photos."""
