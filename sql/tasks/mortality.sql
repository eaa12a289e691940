-- mortality: died in this hospital admission (admissions.hospital_expire_flag).
-- Never NULL: every stay of the cohort joined an admission.
SELECT stay_id, CAST(hospital_expire_flag AS TINYINT) AS label
FROM cohort_stays
