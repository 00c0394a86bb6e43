"""The embedded default's data: synthetic figures and portraits rendered with exact keypoints."""
