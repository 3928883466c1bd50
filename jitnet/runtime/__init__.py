"""Devices, arrays, buffer reuse and the executor that runs compiled programs."""
