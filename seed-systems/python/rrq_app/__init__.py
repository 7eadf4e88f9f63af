"""The job functions taskwire's real-RRQ tests run on RRQ's own Python runner."""
