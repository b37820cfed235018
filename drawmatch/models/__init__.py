"""What turns an image into numbers: the backbone registry, preprocessing (reduced-size
decode, the eval and train transforms), the embedder (torch or ONNX Runtime), the region embedder
(windows at several scales) and local features (SIFT or ORB keypoints for verification)."""
