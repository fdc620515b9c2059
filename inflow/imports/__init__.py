"""What the S3 import poller and the gateway's File Imports API share about imports: the run-history item
of MoEngage's File Imports API (``history.py``). Below the components, so both can use it."""
