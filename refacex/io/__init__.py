"""Reading and writing images (and, later, video) with clear errors and atomic writes."""
