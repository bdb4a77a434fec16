"""Face and plate detectors behind one interface."""
