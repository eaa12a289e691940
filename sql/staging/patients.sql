-- staged_patients: one row per patient, from MIMIC-IV hosp/patients.
-- Age at an admission is anchor_age + (year(admittime) - anchor_year) (see cohort_candidates.sql).
-- _reject names why a row is dropped (counted in the asset's metadata); NULL keeps it.
-- _unparsed lists the columns whose value is present but does not parse (kept as NULL).
WITH parsed AS (
    SELECT
        TRY_CAST(subject_id AS BIGINT)   AS subject_id,
        gender,                                        -- 'F' / 'M'
        TRY_CAST(anchor_age AS INTEGER)  AS anchor_age,
        TRY_CAST(anchor_year AS INTEGER) AS anchor_year,
        anchor_year_group,                             -- e.g. '2011 - 2013' (real years)
        TRY_CAST(try_strptime(dod, ['%Y-%m-%d', '%Y-%m-%d %H:%M:%S']) AS DATE) AS dod,
        dod                              AS raw_dod
    FROM raw
)
SELECT
    * EXCLUDE (raw_dod),
    CASE
        WHEN subject_id IS NULL THEN 'subject_id not an integer'
        WHEN anchor_age IS NULL THEN 'anchor_age not an integer'
        WHEN anchor_year IS NULL THEN 'anchor_year not an integer'
    END AS _reject,
    unparsed('dod', raw_dod, dod) AS _unparsed
FROM parsed
