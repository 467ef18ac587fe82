-- State every relay replica must see alike (README "Scaling"): run once on an existing
-- Supabase database before deploying a relay that uses it. Both tables are the relay's own;
-- only the service role reaches them (RLS on, no policy: the REST API serves nothing).

-- Secrets a relay makes up when none is configured (the preview-URL signing key without
-- GAME_SIGNING_SECRET, the development-token secret): the first replica to start stores
-- one, every other replica reads it.
CREATE TABLE IF NOT EXISTS public.relay_secrets (
  name       text PRIMARY KEY,
  value      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- The version a restore made current (docs/protocol.md §6.5), until a new version is made.
CREATE TABLE IF NOT EXISTS public.relay_current_versions (
  project_id uuid PRIMARY KEY REFERENCES public.projects(id) ON DELETE CASCADE,
  version    text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE public.relay_secrets          ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.relay_current_versions ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.relay_secrets, public.relay_current_versions FROM PUBLIC, anon, authenticated;
GRANT  ALL ON public.relay_secrets, public.relay_current_versions TO service_role;
