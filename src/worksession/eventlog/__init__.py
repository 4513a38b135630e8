"""The per-session event log, which every feature writes through the pipeline: the events
(``events``), the one way they become frames (``render``), what is published after the
commit (``outbox``) and the SQL that reads them back (``repository``)."""
