"""Public names, the capability catalog and request routing. No I/O."""
