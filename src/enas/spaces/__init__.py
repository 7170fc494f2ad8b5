"""Search spaces: decision lists, supernets and children."""
