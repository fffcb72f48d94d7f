"""Preference data: records, reading and writing, converters, transforms, tokenization, collation."""
