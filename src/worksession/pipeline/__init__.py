"""The one write pipeline: every state-changing input becomes a command (``commands``),
decided by a pure function over the rows a batch loaded (``world``, ``decision``), written
set-based by a store (``store``, ``postgres``, ``sqlite``) and published after the commit
(``runner``)."""
