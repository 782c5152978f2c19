"""A viva session that outlives its connections: scoring off the voice path, usage, the rows a
session writes."""
