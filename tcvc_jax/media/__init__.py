"""Video and image files: one reader (videos, frame folders, images) and one writer."""
