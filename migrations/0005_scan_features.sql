-- Each assessed conversion keeps its anomaly feature row, so an incremental scan can compare
-- new conversions with the program's earlier ones without recomputing them.
ALTER TABLE conversion_risk ADD COLUMN features real[];
