"""Options shared by every test directory."""
