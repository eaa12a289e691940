-- cohort_year_groups: X-ray availability by the patient's anchor_year_group (the real
-- 3-year range that MIMIC-IV's shifted anchor_year stands for). MIMIC-CXR holds studies
-- of 2011-2016 only, so a stay whose approximate real year lies outside those years cannot
-- have an X-ray: real year ~ group start/end + (year(admittime) - anchor_year), an
-- interval of 3 years; `outside_cxr_years` counts stays whose interval misses 2011-2016.
-- Reads cohort_out (the cohort being built) and staged_patients.
WITH s AS (
    SELECT
        coalesce(p.anchor_year_group, 'unknown') AS anchor_year_group,
        c.has_cxr,
        TRY_CAST(split_part(p.anchor_year_group, ' - ', 1) AS INTEGER)
            + (year(c.admittime) - p.anchor_year) AS real_year_low,
        TRY_CAST(split_part(p.anchor_year_group, ' - ', 2) AS INTEGER)
            + (year(c.admittime) - p.anchor_year) AS real_year_high
    FROM cohort_out AS c
    JOIN staged_patients AS p ON p.subject_id = c.subject_id
)
SELECT
    anchor_year_group,
    count(*) AS stays,
    avg(has_cxr::INT) AS has_cxr,
    count(*) FILTER (WHERE real_year_high < 2011 OR real_year_low > 2016) AS outside_cxr_years
FROM s
GROUP BY ALL
ORDER BY anchor_year_group
