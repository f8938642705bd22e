"""Alert rules, their evaluation by one collector at a time, and the alerts they raise."""
