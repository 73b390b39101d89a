"""``qoq-node routing survey``: before go-live, where a period's studies in the PACS would be routed, from
their C-FIND headers. ``query.py`` asks the PACS (study level paged by date, then series level),
``tally.py`` routes and counts, ``command.py`` is the command."""
