"""Placeholder until its command lands."""

commands: list = []
