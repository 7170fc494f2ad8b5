"""`enas bench`: side-by-side throughput of the supernets and plain reference networks."""
