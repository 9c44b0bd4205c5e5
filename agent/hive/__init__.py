"""The Hive purchase_log domain, in one place.

* ``spec``: the field table of seed 003 and the rules that join fields;
* ``codes``: the enumerations and the ISO code lists values are checked against;
* ``times``: purchase_time and timezone;
* ``purchase_log``: normalizing one record (each field checked by its row of the table);
* ``fast_path``: the same answer for records already canonical, at msgspec speed;
* ``records``: a normalized record as the journal holds it, and as outputs write it.
"""
