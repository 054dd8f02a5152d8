"""The bundled authoritative DNS server (see README.md beside this file)."""
