"""`enas export`: trained children as standalone files."""
