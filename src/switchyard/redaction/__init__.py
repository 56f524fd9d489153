"""Redaction and data-loss prevention: detectors that validate what they find, the actions
taken on it (mask, hash, block, tokenize), and the engine that applies operators' rules to
results, arguments and outbound notifications."""
