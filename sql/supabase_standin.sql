-- Supabase stand-in for tests: docs/data-and-auth.md Appendices A, B and C, verbatim.
-- The relay never creates these objects; in production Supabase owns them.
-- Loaded by scripts/test-postgres.sh into the template database.

-- ===== Appendix A — Supabase-compatible shim (tests only) ====================
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon')          THEN CREATE ROLE anon          NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role')  THEN CREATE ROLE service_role  NOLOGIN NOINHERIT BYPASSRLS; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'relay')         THEN CREATE ROLE relay LOGIN NOINHERIT PASSWORD 'relay-test'; END IF;
END $$;
GRANT anon, authenticated, service_role TO relay;

CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;

CREATE SCHEMA IF NOT EXISTS auth;
CREATE TABLE IF NOT EXISTS auth.users (
  id                 uuid PRIMARY KEY,
  aud                varchar(255),
  role               varchar(255),
  email              varchar(255),
  raw_app_meta_data  jsonb DEFAULT '{}'::jsonb,
  raw_user_meta_data jsonb DEFAULT '{}'::jsonb,
  is_anonymous       boolean NOT NULL DEFAULT false,
  created_at         timestamptz DEFAULT now(),
  updated_at         timestamptz DEFAULT now()
);

-- Same contract as hosted Supabase: per-claim GUC first, then the JSON claims GUC.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$$;
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
$$;
CREATE OR REPLACE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
                  nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
$$;
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;

GRANT USAGE ON SCHEMA auth, extensions, public TO anon, authenticated, service_role;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO anon, authenticated, service_role;
-- Supabase default privileges: API roles get every new public object; RLS decides rows.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES    TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO anon, authenticated, service_role;

-- ===== Appendix B — tables the relay needs (consolidated effective schema) ===
SET search_path = public, extensions;

-- Production uses time-ordered UUID v7; nothing may rely on id order, so tests can use v4.
CREATE OR REPLACE FUNCTION public.uuid_generate_v7() RETURNS uuid
  LANGUAGE sql VOLATILE AS $$ SELECT gen_random_uuid() $$;
-- Production: prefix + '_' + 10 random base62 characters.
CREATE OR REPLACE FUNCTION public.generate_public_id(prefix text) RETURNS text
  LANGUAGE sql VOLATILE SET search_path = public, extensions AS $$
  SELECT prefix || '_' || substr(translate(encode(gen_random_bytes(12), 'base64'), '+/=', 'xYz'), 1, 10) $$;
CREATE OR REPLACE FUNCTION public.update_updated_at() RETURNS trigger
  LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;

CREATE TABLE public.users (
  id           uuid PRIMARY KEY REFERENCES auth.users(id) ON DELETE CASCADE,
  public_id    text NOT NULL DEFAULT generate_public_id('u'),
  email        text NOT NULL UNIQUE,
  display_name text,
  avatar_url   text,
  username     text,
  bio          text,
  social_links jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_users_public_id ON public.users(public_id) WHERE public_id IS NOT NULL;
CREATE TRIGGER users_updated_at BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION update_updated_at();

CREATE OR REPLACE FUNCTION public.handle_new_user() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO public.users (id, email, display_name, avatar_url)
  VALUES (NEW.id, NEW.email,
          coalesce(NEW.raw_user_meta_data ->> 'full_name', NEW.raw_user_meta_data ->> 'name', split_part(NEW.email, '@', 1)),
          coalesce(NEW.raw_user_meta_data ->> 'avatar_url', NEW.raw_user_meta_data ->> 'picture'));
  RETURN NEW;
END $$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();

CREATE TABLE public.projects (
  id             uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  user_id        uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
  public_id      text NOT NULL DEFAULT generate_public_id('p'),
  name           text NOT NULL DEFAULT 'New Game',
  game_type      text DEFAULT '2d' CHECK (game_type IN ('2d', '3d')),
  storage_path   text,
  is_public      boolean NOT NULL DEFAULT false,
  remixed_from   uuid REFERENCES public.projects(id) ON DELETE SET NULL,
  is_initialized boolean DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_projects_user_id      ON public.projects(user_id);
CREATE INDEX idx_projects_user_updated ON public.projects(user_id, updated_at DESC);
CREATE INDEX idx_projects_remixed_from ON public.projects(remixed_from);
CREATE INDEX idx_projects_public       ON public.projects(updated_at DESC) WHERE is_public;
CREATE UNIQUE INDEX idx_projects_public_id ON public.projects(public_id) WHERE public_id IS NOT NULL;
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON public.projects FOR EACH ROW EXECUTE FUNCTION update_updated_at();

CREATE TABLE public.chat_history (
  id         uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  project_id uuid NOT NULL REFERENCES public.projects(id) ON DELETE CASCADE,
  role       text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  message    text NOT NULL,
  created_at timestamptz DEFAULT now()
);
CREATE INDEX idx_chat_history_project_id      ON public.chat_history(project_id);
CREATE INDEX idx_chat_history_project_created ON public.chat_history(project_id, created_at DESC);

CREATE TABLE public.jobs (
  id               uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  user_id          uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
  project_id       uuid NOT NULL REFERENCES public.projects(id) ON DELETE CASCADE,
  status           text DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
  progress         integer DEFAULT 0,
  progress_message text,
  result           text,
  error            text,
  created_at       timestamptz DEFAULT now(),
  updated_at       timestamptz DEFAULT now(),
  -- The relay's own (sql/job_leases.sql): the instance running the job and until when.
  owner_instance   uuid,
  lease_expires_at timestamptz
);
CREATE INDEX idx_jobs_user_id     ON public.jobs(user_id);
CREATE INDEX idx_jobs_lease       ON public.jobs(lease_expires_at) WHERE status IN ('pending', 'processing');
CREATE INDEX idx_jobs_project_id  ON public.jobs(project_id);
CREATE INDEX idx_jobs_status      ON public.jobs(status);
CREATE INDEX idx_jobs_user_status ON public.jobs(user_id, status);
CREATE TRIGGER jobs_updated_at BEFORE UPDATE ON public.jobs FOR EACH ROW EXECUTE FUNCTION update_updated_at();

CREATE TABLE public.publish_drafts (
  project_id    uuid PRIMARY KEY REFERENCES public.projects(id) ON DELETE CASCADE,
  title         text,
  description   text,
  how_to_play   text,
  tags          text,
  visibility    text DEFAULT 'private' CHECK (visibility IN ('public', 'unlisted', 'private')),
  remix         text DEFAULT 'disallow' CHECK (remix IN ('allowed', 'disallow')),
  thumbnail_url text,
  updated_at    timestamptz DEFAULT now()
);
CREATE TRIGGER publish_drafts_updated_at BEFORE UPDATE ON public.publish_drafts FOR EACH ROW EXECUTE FUNCTION update_updated_at();

CREATE TABLE public.activity_log (
  id          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  user_id     uuid REFERENCES public.users(id) ON DELETE SET NULL,
  action      text NOT NULL,
  target_type text,
  target_id   text,
  details     text,
  created_at  timestamptz DEFAULT now()
);
CREATE INDEX idx_activity_log_user_id ON public.activity_log(user_id);

CREATE TABLE public.notifications (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id    uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
  type       text NOT NULL CHECK (type IN ('project', 'system', 'social')),
  title      text NOT NULL,
  message    text NOT NULL,
  icon       text DEFAULT 'default',
  project_id uuid REFERENCES public.projects(id) ON DELETE SET NULL,
  job_id     uuid,
  read       boolean NOT NULL DEFAULT false,
  read_at    timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, job_id)
);

-- Reconstructed quota objects (verify against production, Q1).
CREATE TABLE public.subscriptions (
  id                     uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  user_id                uuid NOT NULL UNIQUE REFERENCES auth.users(id),
  plan                   text NOT NULL DEFAULT 'free',
  status                 text NOT NULL DEFAULT 'active',
  stripe_customer_id     text,
  stripe_subscription_id text,
  current_period_start   timestamptz,
  current_period_end     timestamptz,
  created_at             timestamptz DEFAULT now(),
  updated_at             timestamptz DEFAULT now()
);
CREATE TABLE public.usage_quotas (
  id               uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
  user_id          uuid NOT NULL REFERENCES auth.users(id),
  quota_date       date NOT NULL,
  projects_created integer DEFAULT 0,
  messages_sent    integer DEFAULT 0,
  created_at       timestamptz DEFAULT now(),
  updated_at       timestamptz DEFAULT now(),
  UNIQUE (user_id, quota_date)
);

-- Atomic check-and-increment of today's counter; -1 = unlimited.
-- Returns the post-increment count when allowed, the unchanged count when refused.
CREATE OR REPLACE FUNCTION public.try_consume_quota(p_user_id uuid, p_field text, p_limit integer)
RETURNS TABLE (allowed boolean, current_count integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE n integer;
BEGIN
  IF p_field NOT IN ('projects_created', 'messages_sent') THEN
    RAISE EXCEPTION 'unknown quota field %', p_field;
  END IF;
  INSERT INTO usage_quotas (user_id, quota_date) VALUES (p_user_id, current_date)
  ON CONFLICT (user_id, quota_date) DO NOTHING;
  EXECUTE format('SELECT coalesce(%I, 0) FROM usage_quotas WHERE user_id = $1 AND quota_date = current_date FOR UPDATE', p_field)
    INTO n USING p_user_id;
  IF p_limit <> -1 AND n >= p_limit THEN
    RETURN QUERY SELECT false, n;
    RETURN;
  END IF;
  EXECUTE format('UPDATE usage_quotas SET %1$I = coalesce(%1$I, 0) + 1, updated_at = now()
                  WHERE user_id = $1 AND quota_date = current_date RETURNING %1$I', p_field)
    INTO n USING p_user_id;
  RETURN QUERY SELECT true, n;
END $$;

CREATE OR REPLACE FUNCTION public.get_quota(p_user_id uuid)
RETURNS TABLE (projects_created integer, messages_sent integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT coalesce(q.projects_created, 0), coalesce(q.messages_sent, 0)
  FROM usage_quotas q WHERE q.user_id = p_user_id AND q.quota_date = current_date
$$;
REVOKE EXECUTE ON FUNCTION public.try_consume_quota(uuid, text, integer), public.get_quota(uuid) FROM PUBLIC, anon, authenticated;
GRANT  EXECUTE ON FUNCTION public.try_consume_quota(uuid, text, integer), public.get_quota(uuid) TO service_role;

-- ===== Appendix C — effective RLS policies ===================================
ALTER TABLE public.users          ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.projects       ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_history   ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.jobs           ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.publish_drafts ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.activity_log   ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notifications  ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.subscriptions  ENABLE ROW LEVEL SECURITY;  -- production policies unknown
ALTER TABLE public.usage_quotas   ENABLE ROW LEVEL SECURITY;  -- production policies unknown

CREATE POLICY users_read_own   ON public.users FOR SELECT TO authenticated USING ((SELECT auth.uid()) = id);
CREATE POLICY users_update_own ON public.users FOR UPDATE TO authenticated
  USING ((SELECT auth.uid()) = id) WITH CHECK ((SELECT auth.uid()) = id);

CREATE POLICY projects_read_own   ON public.projects FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY projects_insert_own ON public.projects FOR INSERT TO authenticated WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY projects_update_own ON public.projects FOR UPDATE TO authenticated
  USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
CREATE POLICY projects_delete_own ON public.projects FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY projects_select_anon ON public.projects FOR SELECT TO anon USING (is_public = true);

CREATE POLICY chat_history_read_own ON public.chat_history FOR SELECT TO authenticated USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = chat_history.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY chat_history_insert_own ON public.chat_history FOR INSERT TO authenticated WITH CHECK (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = chat_history.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY chat_history_delete_own ON public.chat_history FOR DELETE TO authenticated USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = chat_history.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY chat_history_select_anon ON public.chat_history FOR SELECT TO anon USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = chat_history.project_id AND p.is_public = true));

CREATE POLICY jobs_read_own   ON public.jobs FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY jobs_insert_own ON public.jobs FOR INSERT TO authenticated WITH CHECK (
  user_id = (SELECT auth.uid()) AND EXISTS (
    SELECT 1 FROM public.projects p WHERE p.id = jobs.project_id AND p.user_id = (SELECT auth.uid())));
-- jobs: no UPDATE/DELETE policy — only service_role changes jobs

CREATE POLICY publish_drafts_read_own ON public.publish_drafts FOR SELECT TO authenticated USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY publish_drafts_insert_own ON public.publish_drafts FOR INSERT TO authenticated WITH CHECK (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY publish_drafts_update_own ON public.publish_drafts FOR UPDATE TO authenticated
  USING (EXISTS (SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.user_id = (SELECT auth.uid())))
  WITH CHECK (EXISTS (SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY publish_drafts_delete_own ON public.publish_drafts FOR DELETE TO authenticated USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.user_id = (SELECT auth.uid())));
CREATE POLICY publish_drafts_select_anon ON public.publish_drafts FOR SELECT TO anon USING (EXISTS (
  SELECT 1 FROM public.projects p WHERE p.id = publish_drafts.project_id AND p.is_public = true));

CREATE POLICY activity_log_read_own   ON public.activity_log FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
CREATE POLICY activity_log_insert_own ON public.activity_log FOR INSERT TO authenticated WITH CHECK (user_id = (SELECT auth.uid()));

-- 022: no TO clause (PUBLIC), per-row auth.uid()
CREATE POLICY "Users can view own notifications"   ON public.notifications FOR SELECT USING (user_id = auth.uid());
CREATE POLICY "Users can update own notifications" ON public.notifications FOR UPDATE
  USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());

-- ===== The relay's own tables (sql/relay_shared_state.sql, verbatim) ===========
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
