"""Fine-tuning a backbone: the training harness every training job runs (epochs, checkpoints,
resuming, best model), its checkpoint format, block freezing and L2-SP, losses, online
hard-negative mining, gathering across DDP ranks, pseudo-pairs rendered from artworks, and
label-based training (verification, classification)."""
