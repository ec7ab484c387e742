-- Typed, tidied customers. Column names are the upload files' headers (loaded as they are).
select
    cast(customer_id as bigint) as customer_id,
    cast(first_name as varchar) as first_name,
    cast(last_name as varchar) as last_name,
    lower(cast(email as varchar)) as email,
    upper(cast(country as varchar)) as country_code,
    cast(signup_date as date) as signup_date
from {{ source('customers', 'customers') }}
