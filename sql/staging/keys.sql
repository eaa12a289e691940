-- staged_keys: the duplicate-key rule, around the staging statement of every table whose
-- key the cohort relies on (patients: subject_id, admissions: hadm_id, icustays: stay_id,
-- discharge / radiology: note_id, cxr_metadata: dicom_id; RawTable.key in
-- plumbing/raw_layout.py). Among the rows that pass the table's own checks:
--   * copies of one identical row: one is kept, the others dropped as 'duplicate <key>';
--   * rows that share a key but differ in any column: all of them are dropped as
--     'conflicting duplicate <key>': the file cannot tell which is right, and no row
--     order may decide (the staged table must not depend on how the file is sorted).
-- Rows come out by key, so two runs write the same bytes (the window's own output order
-- varies from run to run); the kept rows' keys are unique, so the order is total.
SELECT
    * EXCLUDE (_reject, _row),
    CASE
        WHEN _reject IS NOT NULL THEN _reject
        WHEN count(DISTINCT _row) OVER same_key > 1 THEN 'conflicting duplicate {{key}}'
        WHEN row_number() OVER (same_key ORDER BY _row) > 1 THEN 'duplicate {{key}}'
    END AS _reject
FROM (
    SELECT *, hash(*COLUMNS(* EXCLUDE (_reject))) AS _row
    FROM ({{statement}})
)
WINDOW same_key AS (PARTITION BY {{key}}, _reject IS NULL)
ORDER BY {{key}}
