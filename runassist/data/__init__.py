"""Data readers: files (or packaged asset names) in, frozen example records out."""
