-- API keys may stop working at a set time.
alter table api_keys add column expires_at text;
