"""Fine-tuning a backbone: losses, online hard-negative mining, gathering across DDP ranks,
pseudo-pairs rendered from artworks, and label-based training (verification, classification)."""
