-- staged_discharge and staged_radiology: the two MIMIC-IV-Note tables, one statement
-- (same columns, same rules). note/discharge: discharge summaries (note_type DS) and
-- addenda (AD); note/radiology: reports (RR) and addenda (AR), hadm_id often empty.
-- The text stays here, keyed by note_id; cohort_notes lists only which notes a stay may use.
WITH parsed AS (
    SELECT
        note_id,
        TRY_CAST(subject_id AS BIGINT) AS subject_id,
        TRY_CAST(hadm_id AS BIGINT)    AS hadm_id,
        note_type,
        TRY_CAST(note_seq AS INTEGER)  AS note_seq,
        mimic_ts(charttime)            AS charttime,
        mimic_ts(storetime)            AS storetime,   -- may be empty
        text,
        hadm_id                        AS raw_hadm_id,
        note_seq                       AS raw_note_seq,
        storetime                      AS raw_storetime
    FROM raw
)
SELECT
    * EXCLUDE (raw_hadm_id, raw_note_seq, raw_storetime),
    CASE
        WHEN note_id IS NULL THEN 'note_id empty'
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN charttime IS NULL THEN 'charttime unparseable'
    END AS _reject,
    nullif(concat_ws(' ',
        unparsed('hadm_id', raw_hadm_id, hadm_id),
        unparsed('note_seq', raw_note_seq, note_seq),
        unparsed('storetime', raw_storetime, storetime)
    ), '') AS _unparsed
FROM parsed
