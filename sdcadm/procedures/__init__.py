"""Procedures: prepare -> summarize -> confirm -> execute.

Not built yet: the runner and the migrate/restore procedures land with the
procedures issue (DESIGN section 2).
"""
