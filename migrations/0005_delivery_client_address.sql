-- The client each webhook delivery came from, as the daemon resolved it (the TCP
-- peer, or the address a trusted proxy reported), so that operators can see who
-- sent what through a proxy or tunnel. NULL for older rows and for snapshots the
-- daemon fetched from Replicate itself.
ALTER TABLE webhook_deliveries ADD COLUMN client_address TEXT;
