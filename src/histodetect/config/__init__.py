"""Config: the run's config checked against its schema, and the settings each stage reads.

The top floor: it may read every stage to resolve a derived choice once (``settings``); no
stage imports it. ``validation`` checks the config and sample sheets in one line per fault.
"""
