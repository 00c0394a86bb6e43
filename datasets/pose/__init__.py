"""Body keypoints, facial landmarks, pose heatmaps and face boxes: the conventions every stage shares."""
