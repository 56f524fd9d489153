"""Configuration: the user-facing schema, loading with secrets by reference, and compilation
into each component's own frozen settings. Nothing on the forward path imports this package.
"""
