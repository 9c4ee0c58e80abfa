"""ratelimit: sliding windows and concurrency units, their plan and their headers."""
