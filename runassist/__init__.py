"""runassist: fine-tune a pretrained model on your labelled data, evaluate it, serve it."""

__version__ = "0.1.0"
