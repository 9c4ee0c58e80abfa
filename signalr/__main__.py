"""``python -m signalr`` runs the example chat hub (see :mod:`signalr.example`)."""

from signalr.example import main

main()
