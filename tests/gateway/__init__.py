"""Tests of the gateway, one package per wing; pure parts and background work at this level."""
