"""The job contract and its Redis state, shared by producers and workers."""
