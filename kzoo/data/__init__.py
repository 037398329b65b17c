"""Data: image files, folder scans and stores, named datasets, pipelines and augmentation."""
