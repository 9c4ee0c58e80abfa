"""What the tests share: real servers and processes on free ports, raw clients, a fake clock, test data."""
