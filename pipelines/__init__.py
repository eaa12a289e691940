"""Dagster wiring for MoE-Health: definitions, resources, jobs, schedules and sensors."""
