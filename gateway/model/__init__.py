"""What the gateway talks about, free of I/O: the session request and its validation, the platform's
enums, the errors a person is shown, why a request left the queue, and text that can cross the wire."""
