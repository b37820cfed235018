"""Style augmentation: the OpenCV effects (oil painting, watercolour, texture, gray, pencil
sketch) that make a drawing look like another medium, and neural style transfer renditions."""
