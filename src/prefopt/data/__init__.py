"""Preference data: records, I/O, converters, transforms, tokenization and collation."""
