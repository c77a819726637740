"""The only code that touches the operating system or a GPU driver. Errors are translated at this edge."""
