"""Older schema versions, kept so old bytes still decode; a package only so its .avsc files ship in wheels."""
