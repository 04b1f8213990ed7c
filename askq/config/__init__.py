"""Settings and logging shared by every askq process."""
