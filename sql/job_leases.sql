-- Job leases (README "Scaling"): run once on an existing Supabase database before deploying a
-- relay that has them. The instance running a job renews `lease_expires_at` (database time)
-- every few seconds; any instance fails unfinished jobs whose lease expired.
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS owner_instance uuid;
ALTER TABLE public.jobs ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
CREATE INDEX IF NOT EXISTS idx_jobs_lease
    ON public.jobs(lease_expires_at) WHERE status IN ('pending', 'processing');
